"""Pure domain: stages, transitions, the artifact contract, verdict parsers. No I/O."""
