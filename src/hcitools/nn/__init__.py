"""Internal building blocks (nn); see the developer docs."""
