"""The VLA policy: native model, training, evaluation, backends (native, Hugging Face, remote) and the asynchronous chunked policy node."""
