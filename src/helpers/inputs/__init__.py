"""Files to the models' inputs: images, the dataset, the external sets, phantoms, duplicates, volumes."""
