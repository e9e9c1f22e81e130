"""What runs at a hospital: the Flower ClientApp and the rules of what may leave."""
