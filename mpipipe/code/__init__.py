"""The module path stopes' documentation writes (`stopes.code.stopes_module`); the code is mpipipe.core."""
