"""Internal building blocks (train); see the developer docs."""
