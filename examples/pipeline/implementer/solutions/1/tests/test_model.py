"""Subtask 1 (model core): the builder, the params validation and the data loader."""

from pathlib import Path

import pytest
import torch
from model import ParamsError, build_model, load_csv, validate_params

HERE = Path(__file__).resolve().parents[1]
PARAMS = {"lr": 0.001, "hidden": 8, "layers": 2, "activation": "tanh", "batch_size": 16,
          "weight_decay": 0.0}


def test_output_shape_is_one_value_per_row():
    model = build_model(validate_params(PARAMS), n_features=3)
    assert model(torch.zeros(5, 3)).shape == (5, 1)


def test_depth_follows_layers():
    linears = [m for m in build_model(validate_params({**PARAMS, "layers": 3}), 3)
               if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4  # three hidden layers and the output layer


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"activation": "sigmoid"}, {"hidden": 2.5}])
def test_invalid_params_are_refused(bad):
    with pytest.raises(ParamsError):
        validate_params({**PARAMS, **bad})


def test_the_shipped_data_loads_as_features_and_target():
    x, y = load_csv(HERE / "data" / "val.csv")
    assert x.shape[1] == 3
    assert y.shape == (x.shape[0], 1)
    assert torch.isfinite(x).all()
