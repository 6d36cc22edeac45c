"""ZenML model deployers that just work.

Importing this package is cheap: backends, ZenML and HTTP clients are imported
only by the modules that need them.
"""

__version__ = "0.1.0"
