"""Internal building blocks (dataloaders); see the developer docs."""
