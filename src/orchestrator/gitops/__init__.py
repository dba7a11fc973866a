"""Git: worktrees, rebase, compare-and-swap update of main. Every call has a timeout."""
