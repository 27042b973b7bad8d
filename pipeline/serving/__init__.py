"""Serving: the HTTP API and web page of `vigil serve` (`api`: the FastAPI app; `media`: which store keys it
serves and their byte ranges; `page.html`: the page, no build step). Plain Python: the Ray Serve deployments
that run it are `actors.serve`."""
