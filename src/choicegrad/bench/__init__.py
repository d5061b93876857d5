"""The benchmark, apart from the library: tasks with known optima, peers, harness, report, data fetch.

Needs the `bench` extra (matplotlib for the report's plots): pip install 'choicegrad[bench]'.
"""
