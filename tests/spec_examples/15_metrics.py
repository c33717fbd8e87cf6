metrics = client.metrics.get()
print(metrics)
# Returns Prometheus-format text with server metrics
