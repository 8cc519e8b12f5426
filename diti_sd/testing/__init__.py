"""Test support shipped with the package: ``tiny`` builds a tiny Stable Diffusion of the real diffusers
classes offline (the tests, ``diti-sd tiny-model`` and the synthetic benchmark's base models start from it)."""
