"""Benchmarks (``fpliif bench``, ``fpliif info``): parameters, MACs and speed of inference and training.

``inference`` times the model (and the whole photo path), ``training`` times full training steps, both with
``runner`` (device setup and the one timing loop); ``flops`` counts MACs, ``cli`` holds both commands. Importing
this package imports nothing heavy (the command line imports ``fpliif.bench.cli`` to build its parser without
torch).
"""
