"""rdb worker: consumes batches of host requests from RabbitMQ and runs them on MySQL."""
