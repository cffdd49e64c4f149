"""Search-space and policy/recipe formats, plus built-in space and recipe files."""

from spaces._schema import FieldError, SchemaError
from spaces.policy import (
    POLICY_VERSION,
    DistillSpec,
    FinetuneSpec,
    LayerBits,
    ModelSpec,
    Policy,
    PolicyError,
    PruneSpec,
    QuantSpec,
    keep_count,
)

__all__ = [
    "POLICY_VERSION", "DistillSpec", "FieldError", "FinetuneSpec", "LayerBits", "ModelSpec", "Policy",
    "PolicyError", "PruneSpec", "QuantSpec", "SchemaError", "keep_count",
]
