"""Brain-tumour MRI classification with recurrent networks: the study's package (docs/architecture.md).

TensorFlow's C++ start-up lines (CUDA probing, CPU features) are kept off the console unless $TF_CPP_MIN_LOG_LEVEL
is 0 (helpers.backend_noise): that must be arranged before any backend loads, and every entry point (a notebook, the
command, a test) imports this first.
A command started as `python -m helpers.<command>` ends in one line on Ctrl-C while it is still starting
(helpers.interrupts).
"""

import os

from helpers.backend_noise import quiet_backend_start_up
from helpers.interrupts import guard_start_up

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
quiet_backend_start_up()
guard_start_up()
