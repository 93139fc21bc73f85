"""Brain-tumour MRI classification with recurrent networks: the study's package (docs/architecture.md).

TensorFlow's C++ start-up lines (CUDA probing, CPU features) are hidden unless $TF_CPP_MIN_LOG_LEVEL says otherwise:
they must be set before any backend loads, and every entry point (a notebook, the command, a test) imports this first.
A command started as `python -m helpers.<command>` ends in one line on Ctrl-C while it is still starting
(helpers.interrupts).
"""

import os

from helpers.interrupts import guard_start_up

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
guard_start_up()
