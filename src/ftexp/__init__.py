"""ftexp: declarative, controlled LLM fine-tuning experiments."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft wherever it is installed) warns at import that it cannot fetch optional CPU
# kernels from the hub: nothing a user of an offline run acts on.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
