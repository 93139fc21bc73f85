"""The models: builders, losses, recipes, training and run folders, saved models and prediction."""
