"""Secret-looking values that the secrets tests plant (in the environment, on the command line) and then
look for in what ftexp wrote or printed."""

SECRET, WANDB_KEY, URL = "tok-9f8e7d6c", "wandb-0123456789abcdef", "postgres://ftexp:pw-5a4b3c@db/runs"
