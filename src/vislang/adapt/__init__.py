"""Adapting a model with few or no labelled images: cached-feature classifiers, generated descriptions, concept bottlenecks."""
