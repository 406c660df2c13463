"""Published method packages (`method_ref`): fetched with git into a SHA-keyed cache, read as method trees."""
