"""Training: the LightningModule and the Trainer built from ``trainer=`` configs."""
