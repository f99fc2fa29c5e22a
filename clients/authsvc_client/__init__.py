"""Client side of authsvc: what a service installs to verify tokens and to obtain them."""
