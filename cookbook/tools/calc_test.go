package main

import "testing"

func TestCalculate(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string]string{"(17 + 25) * 3": "126", "7 / 2": "3.5", "-4 + 1.5": "-2.5", "42 / 3": "14"} {
		if got, err := calculate(expr); err != nil || got != want {
			t.Errorf("calculate(%q) = %q, %v; want %q", expr, got, err, want)
		}
	}
	for _, expr := range []string{"1 / 0", "os.Exit(1)", `"text"`, "2 ** 3", "x + 1", ""} {
		if got, err := calculate(expr); err == nil {
			t.Errorf("calculate(%q) = %q, want an error", expr, got)
		}
	}
}
