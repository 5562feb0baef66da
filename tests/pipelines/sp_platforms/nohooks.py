"""A platform that implements no hook at all."""
from mpipipe.platform import Platform


class EmptyPlatform(Platform):
    pass
