"""The bundled demo model's recipe: its synthetic world, pre-training steps, configs and build script.

Not part of the installed library; run its modules from the repository root (`python -m bundled_model.synthetic`).
"""
