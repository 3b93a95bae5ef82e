"""Administration shared by HTTP and the CLI: one implementation of every admin rule."""
