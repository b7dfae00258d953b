package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
)

var (
	loggerLevel  = flag.String("loggerLevel", "INFO", "Minimum level of messages to log. Possible values: DEBUG, INFO, WARN, ERROR")
	loggerFormat = flag.String("loggerFormat", "default", "Format for logs. Possible values: default, json")
	loggerOutput = flag.String("loggerOutput", "stderr", "Output for the logs. Supported values: stderr, stdout")
)

func setupLogger() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(*loggerLevel)); err != nil {
		return fmt.Errorf("invalid -loggerLevel=%q: possible values are DEBUG, INFO, WARN, ERROR", *loggerLevel)
	}
	out := os.Stderr
	switch *loggerOutput {
	case "stderr":
	case "stdout":
		out = os.Stdout
	default:
		return fmt.Errorf("invalid -loggerOutput=%q: possible values are stderr, stdout", *loggerOutput)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch *loggerFormat {
	case "default":
		slog.SetDefault(slog.New(slog.NewTextHandler(out, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(out, opts)))
	default:
		return fmt.Errorf("invalid -loggerFormat=%q: possible values are default, json", *loggerFormat)
	}
	return nil
}
