package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
)

// calculate evaluates an arithmetic expression exactly, with Go's own
// parser and constant arithmetic: numbers, + - * /, parentheses. Nothing
// else parses, so the model cannot make it run anything.
func calculate(expr string) (string, error) {
	tree, err := parser.ParseExpr(expr)
	if err != nil {
		return "", fmt.Errorf("not an arithmetic expression: %w", err)
	}
	v, err := eval(tree)
	if err != nil {
		return "", err
	}
	if v.Kind() == constant.Int {
		return v.ExactString(), nil
	}
	f, _ := constant.Float64Val(v)
	return fmt.Sprint(f), nil
}

func eval(e ast.Expr) (constant.Value, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.INT && e.Kind != token.FLOAT {
			return nil, fmt.Errorf("%s is not a number", e.Value)
		}
		return constant.MakeFromLiteral(e.Value, e.Kind, 0), nil
	case *ast.ParenExpr:
		return eval(e.X)
	case *ast.UnaryExpr:
		x, err := eval(e.X)
		if err != nil || (e.Op != token.SUB && e.Op != token.ADD) {
			return nil, errors.Join(err, fmt.Errorf("unsupported operator %s", e.Op))
		}
		return constant.UnaryOp(e.Op, x, 0), nil
	case *ast.BinaryExpr:
		x, err := eval(e.X)
		if err != nil {
			return nil, err
		}
		y, err := eval(e.Y)
		if err != nil {
			return nil, err
		}
		switch e.Op {
		case token.ADD, token.SUB, token.MUL:
			return constant.BinaryOp(x, e.Op, y), nil
		case token.QUO:
			if constant.Sign(y) == 0 {
				return nil, errors.New("division by zero")
			}
			// Exact division, also of integers: 7 / 2 is 3.5, not 3.
			return constant.BinaryOp(constant.ToFloat(x), token.QUO, constant.ToFloat(y)), nil
		}
		return nil, fmt.Errorf("unsupported operator %s", e.Op)
	}
	return nil, fmt.Errorf("unsupported expression %T", e)
}
