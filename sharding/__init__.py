"""Device meshes and the rules that map logical axis names onto mesh axes."""
