"""Test support for vla_policy and its benchmarks: fixtures built offline, never used by the runtime.

- :mod:`vla_policy.testing.synthetic`: a small, learnable LeRobot v3 dataset (``write_synthetic_dataset``).
- :mod:`vla_policy.testing.tiny_llava`: a tiny random Llava-style VLA for the Hugging Face backend
  (``write_tiny_llava``).

They live in the installed package (not only under ``test/``) because the benchmarks under ``bench/`` build
their inputs with them too. Nothing under ``vla_policy`` outside this subpackage imports it.
"""
