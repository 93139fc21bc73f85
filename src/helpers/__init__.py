"""Brain-tumour MRI classification with recurrent networks: the study's package (docs/architecture.md).

TensorFlow's C++ start-up lines (CUDA probing, CPU features) are hidden unless $TF_CPP_MIN_LOG_LEVEL says otherwise:
they must be set before any backend loads, and every entry point (a notebook, the command, a test) imports this first.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
