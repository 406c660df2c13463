"""The methods catalog: a caller's named methods, their drafts, published versions and saved examples, and the
resolution of a method selector (`mt_x`, `mt_x@3`, `mt_x@draft`) into the method tree a run or validation uses."""
