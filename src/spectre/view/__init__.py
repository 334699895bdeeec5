"""``spectre view``: play a reconstruction's video, its animated 3D head and its ARKit curves in sync in a
local web page (three.js vendored in ``static/``, so it works offline)."""
