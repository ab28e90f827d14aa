"""CLEVR object set prediction: the data set, an offline generator and their constants."""
