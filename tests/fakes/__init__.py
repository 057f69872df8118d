"""In-process fakes that tests swap in for real servers and clocks."""
