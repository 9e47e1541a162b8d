"""Data: the ShapesWorld generator, image–text pairs with explicit relevance, loaders, images, tokenizers."""
