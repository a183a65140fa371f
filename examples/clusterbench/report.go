package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// samples are the results of repeated trials of one figure.
type samples []float64

// summary is the median with min and max, as "median [min .. max]".
func (s samples) summary(unit string) string {
	if len(s) == 0 {
		return "-"
	}
	if len(s) == 1 {
		return fmtVal(s[0], unit)
	}
	return fmt.Sprintf("%s [%s .. %s] %s", fmtNum(s.median(), unit), fmtNum(slices.Min(s), unit), fmtNum(slices.Max(s), unit), unit)
}

func (s samples) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func fmtVal(v float64, unit string) string { return fmtNum(v, unit) + " " + unit }

func fmtNum(v float64, unit string) string {
	switch {
	case unit == "MB" || v >= 100:
		return fmt.Sprintf("%.0f", v)
	case unit == "s" && v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func secs(d time.Duration) float64 { return d.Seconds() }

// row is one line of the table.
type row struct {
	fig    string
	what   string
	got    samples
	unit   string
	target float64 // upper bound; 0: none
	ref    string  // a reference figure, labelled with where it comes from
}

func (r row) verdict() string {
	switch {
	case r.target == 0 || len(r.got) == 0:
		return ""
	case r.got.median() <= r.target:
		return "met"
	}
	return "MISSED"
}

func (r row) targetText() string {
	if r.target == 0 {
		return "-"
	}
	return fmt.Sprintf("<= %g %s", r.target, r.unit)
}

// printTable prints the figures, then the notes.
func printTable(w io.Writer, rows []row, notes []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfigure\tthis run: median [min .. max]\tn\ttarget\t\treference (not this run unless it says so)")
	fmt.Fprintln(tw, "-\t------\t-----------------------------\t-\t------\t\t-----------------------------------------")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.fig, r.what, r.got.summary(r.unit), len(r.got), r.targetText(), r.verdict(), r.ref)
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "  "+strings.ReplaceAll(n, "\n", "\n    "))
		}
	}
}
