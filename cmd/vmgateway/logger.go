package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
)

var (
	loggerLevel  = flag.String("loggerLevel", "INFO", "Minimum level of messages to log. Possible values: DEBUG, INFO, WARN, ERROR. `token explain` logs from WARN unless it is given, so that the INFO lines of the key and policy loaders stay out of its report")
	loggerFormat = flag.String("loggerFormat", "default", "Format for logs. Possible values: default, json")
	loggerOutput = flag.String("loggerOutput", "stderr", "Output for the logs. Supported values: stderr, stdout")
)

// setupToolLogger is setupLogger for a one-shot tool mode (token explain): without -loggerLevel it logs from WARN
// up, so that the loaders' INFO lines (keys and policies loaded) do not interleave with the tool's own report.
func setupToolLogger() error {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "loggerLevel" })
	if !set {
		*loggerLevel = "WARN"
	}
	return setupLogger()
}

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
