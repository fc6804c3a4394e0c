"""Reports: terminal tables now; figures and the HTML/Markdown report arrive with `compare`."""
