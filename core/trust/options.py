"""Each out-of-distribution method's own options (pydantic, extra="forbid"), as components have theirs."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

StrictInteger = Annotated[int, Strict()]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
MAX_BANK = 100_000  # training features kept for a score: 100k x 2048 in fp16 is 400 MB already


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: StrictInteger = Field(1, ge=1, le=1000, description="the k-th nearest training feature gives the distance")
    bank_size: StrictInteger = Field(4096, ge=1, le=MAX_BANK, description="training images kept (a seeded "
                                     "random subset above this many), stored as fp16")


class MahalanobisOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shrinkage: Number = Field(0.1, gt=0, le=1, description="share of the scaled identity mixed into the shared "
                              "covariance (it is singular with fewer images than features)")
    bank_size: StrictInteger = Field(4096, ge=2, le=MAX_BANK, description="training images the class means and "
                                     "covariance are estimated from (a seeded random subset above this many)")


METHOD_OPTIONS: dict[str, type[BaseModel]] = {
    "knn": KnnOptions,
    "msp": NoOptions,
    "energy": NoOptions,
    "mahalanobis": MahalanobisOptions,
    "none": NoOptions,
}
DEFAULT_METHOD = "knn"
METHOD_DESCRIPTIONS = {
    "knn": "distance of the L2-normalised pooled feature to its k-th nearest training feature",
    "msp": "1 minus the largest (calibrated) class probability",
    "energy": "the negative log-sum-exp of the logits",
    "mahalanobis": "smallest Mahalanobis distance of the L2-normalised pooled feature to a class mean",
    "none": "no score: nothing is ever called unknown",
}


def needs_training_features(method: str) -> bool:
    return method in ("knn", "mahalanobis")
