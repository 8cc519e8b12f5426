"""The names ``diti-sd eval`` accepts, in a module that loads no torch (the CLI builds its help from
them before any heavy import)."""

METHODS = ("diti", "openclip-zeroshot", "tip-adapter", "tip-adapter-f", "diti+tip-adapter", "sd-zeroshot")
PREFILTERS = ("openclip-zeroshot", "tip-adapter", "tip-adapter-f")
VAL_PROTOCOLS = ("coop", "full")
