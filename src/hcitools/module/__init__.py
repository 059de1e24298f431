"""Internal building blocks (module); see the developer docs."""
