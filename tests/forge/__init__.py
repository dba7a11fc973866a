"""The forge: the GitHub client against the shipped fake GitHub (real git, real HTTP)."""
