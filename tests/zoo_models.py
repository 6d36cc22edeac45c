"""The model zoo: small models of the libraries users train with, fitted in seconds on data made
here (no download), each with the rows it is asked about and its in-process predictions."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class ZooModel:
    """One fitted model, an input example, rows to predict, and what the model says about them."""

    name: str
    model: Any
    example: Any  # the input example given at packaging (a slice of the training data)
    rows: Any  # the rows sent over HTTP (DataFrame or numpy array)
    expected: np.ndarray  # in-process predictions for `rows`
    classes: bool  # exact comparison (labels) or within 1e-6 (floats)


def assert_matches(got: Any, zoo: ZooModel) -> None:
    """Answers equal the model's in-process predictions: exactly for classes, within 1e-6 for
    numbers (any shape with as many values)."""
    got = np.asarray(got)
    want = np.asarray(zoo.expected)
    assert got.size == want.size, (zoo.name, got, want)
    got = got.reshape(want.shape)
    if zoo.classes:
        assert got.tolist() == want.tolist(), zoo.name
    else:
        np.testing.assert_allclose(
            got.astype(float), want.astype(float), rtol=0, atol=1e-6, err_msg=zoo.name
        )


def _numeric(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y_class = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)
    y_reg = 2.0 * x[:, 0] - x[:, 3] + 0.1 * rng.normal(size=n)
    return x, y_class, y_reg


def _mixed(n: int = 120, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """A DataFrame as users have them: named columns, strings, a category, missing values."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, size=n)
    income = rng.normal(50_000, 15_000, size=n)
    city = rng.choice(["paris", "berlin", "rome"], size=n).astype(object)
    plan = rng.choice(["free", "pro"], size=n).astype(object)
    age[::7] = np.nan
    income[3::11] = np.nan
    city[5::9] = None
    df = pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan})
    df["plan"] = df["plan"].astype("category")
    y = ((np.nan_to_num(age, nan=40) > 45) ^ (plan == "pro")).astype(int)
    return df, y


def logistic_regression() -> ZooModel:
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _numeric()
    m = LogisticRegression(max_iter=500).fit(x, y)
    return ZooModel("logistic-regression", m, x[:5], x[:20], m.predict(x[:20]), True)


#: The forest as a user writes it in the README's pipeline (tests/test_model_zoo.py runs that).
RANDOM_FOREST = "RandomForestClassifier(n_estimators=20, random_state=0)"


def random_forest() -> ZooModel:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    m = eval(RANDOM_FOREST, {"RandomForestClassifier": RandomForestClassifier}).fit(x, y)
    return ZooModel("random-forest", m, None, x[::10], m.predict(x[::10]), True)


def gradient_boosting_regressor() -> ZooModel:
    from sklearn.ensemble import GradientBoostingRegressor

    x, _, y = _numeric()
    df = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    m = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(df, y)
    return ZooModel("gradient-boosting", m, df[:5], df[:20], m.predict(df[:20]), False)


def hist_gradient_boosting_classifier() -> ZooModel:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y, _ = _numeric()
    x = x.copy()
    x[::6, 1] = np.nan  # HGB handles missing values natively
    m = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    rows = x[:20]
    return ZooModel("hist-gradient-boosting", m, x[:5], rows, m.predict(rows), True)


def column_pipeline() -> ZooModel:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df, y = _mixed()
    pre = ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), ["age", "income"]),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["city", "plan"],
            ),
        ]
    )
    m = Pipeline([("pre", pre), ("model", RandomForestClassifier(n_estimators=15, random_state=0))])
    m.fit(df, y)
    rows = df[:24]  # includes NaN in both numeric columns and None in `city`
    return ZooModel("column-pipeline", m, df[:10], rows, m.predict(rows), True)


def xgb_classifier() -> ZooModel:
    from xgboost import XGBClassifier

    x, y, _ = _numeric()
    df = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    m = XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(df, y)
    return ZooModel("xgboost", m, df[:5], df[:20], m.predict(df[:20]), True)


def lgbm_regressor() -> ZooModel:
    from lightgbm import LGBMRegressor

    x, _, y = _numeric()
    m = LGBMRegressor(n_estimators=20, random_state=0, verbose=-1).fit(x, y)
    return ZooModel("lightgbm", m, x[:5], x[:20], m.predict(x[:20]), False)


def torch_mlp() -> ZooModel:
    import torch
    from zoo_torch import MLP

    torch.manual_seed(0)
    x, _, y = _numeric()
    xt = torch.tensor(x, dtype=torch.float32)
    m = MLP(4, 8, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        loss = ((m(xt).squeeze(1) - torch.tensor(y, dtype=torch.float32)) ** 2).mean()
        loss.backward()
        opt.step()
    m.eval()
    rows = x[:20].astype(np.float32)
    with torch.no_grad():
        expected = m(torch.from_numpy(rows)).numpy()
    return ZooModel("pytorch", m, rows[:5], rows, expected, False)


ZOO: dict[str, Callable[[], ZooModel]] = {
    "logistic-regression": logistic_regression,
    "random-forest": random_forest,
    "gradient-boosting": gradient_boosting_regressor,
    "hist-gradient-boosting": hist_gradient_boosting_classifier,
    "column-pipeline": column_pipeline,
    "xgboost": xgb_classifier,
    "lightgbm": lgbm_regressor,
    "pytorch": torch_mlp,
}

# What a zoo model needs beyond the dev extra: torch is the `torch` extra (pyproject.toml).
_NEEDS = {"pytorch": ("torch",), "transformers": ("torch", "transformers")}


def missing(kind: str) -> str | None:
    """Why the zoo model `kind` cannot be built here (a skip reason), or None when it can."""
    absent = [m for m in _NEEDS.get(kind, ()) if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (
        f"{', '.join(absent)} not installed: the `torch` extra, which `make` installs where "
        "pip's find-links folder holds a torch wheel (`make TORCH=1` installs it from the index)"
    )


#: The zoo models this environment can build.
AVAILABLE = [k for k in ZOO if missing(k) is None]


@cache
def trained(kind: str) -> ZooModel:
    """The zoo model `kind`, fitted once per test process: the zoo modules a worker runs share
    it (never mutate it; `ZOO[kind]()` fits a fresh one, as a re-run of training would). Also
    builds the models only zmd-mlflow serves (`ONLY_MLFLOW`)."""
    return {**ZOO, **ONLY_MLFLOW}[kind]()


def text_pipeline() -> ZooModel:
    """A Hugging Face `text-classification` pipeline on a tiny BERT built here: a word-level
    tokenizer from `tokenizers` and a config-built model (no hub download; random weights,
    spread wide so the two labels' scores differ clearly)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
        pipeline,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "movie", "great", "awful"]
    words += ["plot", "the", "was", "not"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        initializer_range=1.0,
        id2label={0: "NEG", 1: "POS"},
        label2id={"NEG": 0, "POS": 1},
    )
    model = BertForSequenceClassification(config).eval()
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)
    rows = ["good movie", "the plot was awful", "great", "bad bad movie", "not good", "unseen"]
    expected = pipe(rows)
    return ZooModel("transformers", pipe, rows[:2], rows, np.asarray(expected), False)


#: Zoo models only zmd-mlflow serves (tests/test_model_zoo.py), outside `ZOO`'s table.
ONLY_MLFLOW: dict[str, Callable[[], ZooModel]] = {"transformers": text_pipeline}
