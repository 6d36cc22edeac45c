"""The ``zmd-local`` Deployer flavor: ZenML pipeline deployments (``zenml pipeline deploy``,
``Pipeline.deploy()``) served by ZenML's own pipeline server as revisions of the ``local/``
runtime (stable front, start → verify → switch → drain, supervision, API key, metrics).

``flavor.py`` is what ``zenml deployer register --flavor=zmd-local`` takes (imports nothing
heavy); ``service.py`` the pipeline server on ``LocalProcessService``; ``deployer.py`` ZenML's
Deployer hooks mapped onto that service. See docs/pipeline-deployments.md.
"""
