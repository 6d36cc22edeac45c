"""The zoo's PyTorch model class: in a module of its own, as users keep theirs, so that the
packaging layer has to ship its source with the model (the server cannot import `tests/`)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):  # type: ignore[misc]
    """A small multilayer perceptron: inputs -> hidden (ReLU) -> outputs."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]
