"""Benchmarks that ship with the package but are not part of a user's classifier (as open_clip keeps
``open_clip_train`` beside ``open_clip``): ``synthetic``, the fine-grained benchmark behind ``diti-sd demo``.
The library (``diti_sd`` outside this folder) never imports them."""
