"""RVC voice conversion: the models on disk, the support files it needs, and the converter."""
