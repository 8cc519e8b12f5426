"""The names ``diti-sd eval`` accepts, in a module that loads no torch (the CLI builds its help from
them before any heavy import)."""

# diti-auto: DiTi-SD's adapters scored with the window `score.weighting: auto` picks on the split's
# validation draw, beside "diti" scored as the recipe says
DIFFUSION = ("diti", "diti-auto", "sd-zeroshot")
# run on every frozen encoder of the evaluation (zero-shot and Tip-Adapter need a text tower)
FROZEN = ("openclip-zeroshot", "tip-adapter", "tip-adapter-f", "probe")
NEEDS_TEXT = ("openclip-zeroshot", "tip-adapter", "tip-adapter-f")
# standardised DiTi-SD logits plus the partner's, with the weight chosen on validation (first encoder)
ENSEMBLES = ("diti+tip-adapter", "diti+probe")
METHODS = (*DIFFUSION, *FROZEN, *ENSEMBLES)
PREFILTERS = FROZEN
VAL_PROTOCOLS = ("coop", "full")
TIPF_EPOCHS = ("last", "best")
