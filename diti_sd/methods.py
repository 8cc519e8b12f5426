"""The names ``diti-sd eval`` accepts, in a module that loads no torch (the CLI builds its help from
them before any heavy import)."""

# diti-auto: DiTi-SD's adapters scored with the window `score.weighting: auto` picks on the split's
# validation draw, beside "diti" scored as the recipe says
METHODS = ("diti", "diti-auto", "openclip-zeroshot", "tip-adapter", "tip-adapter-f", "diti+tip-adapter", "sd-zeroshot")
PREFILTERS = ("openclip-zeroshot", "tip-adapter", "tip-adapter-f")
VAL_PROTOCOLS = ("coop", "full")
