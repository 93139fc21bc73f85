"""From the notebooks' records to README, models/, the model card, the index and the speed page."""
