"""The native backend: our own checkpoint through ``vla_policy.load_policy`` (the model issue's public API)."""

from __future__ import annotations

import inspect

from vla_common.manifest import EmbodimentManifest

from vla_policy.backends import LoadedPolicy


def load_native(checkpoint_dir: str, device: str = "cpu") -> LoadedPolicy:
    try:
        from vla_policy import load_policy  # type: ignore[attr-defined]
    except ImportError:
        raise RuntimeError(
            "the native backend needs vla_policy.load_policy, which this installation does not provide yet"
        ) from None
    manifest = EmbodimentManifest.load(checkpoint_dir)  # fail early, with the manifest's own message
    kwargs = {"device": device} if "device" in inspect.signature(load_policy).parameters else {}
    policy = load_policy(checkpoint_dir, **kwargs)
    return LoadedPolicy(policy, manifest, f"native checkpoint {checkpoint_dir}")
