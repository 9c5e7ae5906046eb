"""The VLA policy: native model, training, evaluation, backends (native, Hugging Face, remote) and the asynchronous chunked policy node."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `import vla_policy` (the policy node, the executor) does not import torch.
    if name == "load_policy":
        from vla_policy.models.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'vla_policy' has no attribute {name!r}")
