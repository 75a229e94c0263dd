"""A workload for tools/tests/clients_test.py: pyroscope-io (PyPI) profiles it and pushes to the
pyro serve given as the first argument, for the seconds given as the second. Its CPU goes to
hot_python_function, tagged vehicle=car through pyroscope.tag_wrapper."""
import sys
import time

import pyroscope

pyroscope.configure(application_name="pyclient", server_address=sys.argv[1], tags={"region": "eu-north"},
                    upload_interval=5)


def hot_python_function(until):
    n = 0
    while time.time() < until:
        for i in range(10000):
            n += i * i
    return n


end = time.time() + float(sys.argv[2])
while time.time() < end:
    with pyroscope.tag_wrapper({"vehicle": "car"}):
        hot_python_function(time.time() + 0.2)
pyroscope.shutdown()
